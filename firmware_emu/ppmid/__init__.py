"""The PPMID (prepayment meter interface device: the in-home display and keypad) and what it shares with the
HCALCS (`common`: CS03C join, CS08 firmware version, CS09 activation alert)."""
