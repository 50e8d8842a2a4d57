"""edgevib.models"""
