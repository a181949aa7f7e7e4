"""Datasets for splitrec: the census-income data and a synthetic one, split into parties."""
