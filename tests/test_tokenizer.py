import pickle

import pytest

from nullearn.data.tokenizer import BOS_ID, EOS_ID, Tokenizer, train_tokenizer


def test_round_trip_and_special_ids(tokenizer, world):
  text = world.documents[0].text
  ids = tokenizer.encode_document(text)
  assert ids[0] == BOS_ID and ids[-1] == EOS_ID
  assert tokenizer.decode(ids) == text


def test_same_corpus_same_model(world, tokenizer):
  again = train_tokenizer([d.text for d in world.documents], 512)
  assert again.fingerprint == tokenizer.fingerprint


def test_digits_are_single_pieces(tokenizer):
  """A number tokenizes alike before a period and at the end of a cloze answer."""
  assert tokenizer.encode("born in 1853.")[:-1] == tokenizer.encode("born in 1853")


def test_save_load_and_pickle(tokenizer, tmp_path):
  tokenizer.save(tmp_path / "tok.model")
  loaded = Tokenizer.load(tmp_path / "tok.model")
  assert loaded.encode("The capital is") == tokenizer.encode("The capital is")
  assert pickle.loads(pickle.dumps(tokenizer)).fingerprint == tokenizer.fingerprint
  with pytest.raises(FileNotFoundError, match="tokenizer train"):
    Tokenizer.load(tmp_path / "missing.model")
