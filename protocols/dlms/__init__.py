"""dlms"""
