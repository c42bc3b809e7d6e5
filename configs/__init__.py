"""Run configs (ml-collections): `get_config(arg)` in each file, overridable by flags."""
