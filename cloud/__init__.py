"""edgevib.cloud"""
