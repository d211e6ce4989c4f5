"""The HCALCS (HAN-connected auxiliary load control switch)."""
