"""edgevib.edge"""
