"""Builders the tests share: tiny bundles and encoders, toy datasets, a toy training problem, and
drivers for the menu, the server and a stand-in for Kaggle's API. Fixtures are in tests/conftest.py."""
