"""Datalist builders for the public datasets."""
