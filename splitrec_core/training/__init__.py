"""Split training, by role.

Each feature party (`feature_party`), the label party (`label_party`), one party's whole part
from its own files (`party`), every party on this machine (`local`), and the same model trained
in one place for comparison (`central`).
"""
