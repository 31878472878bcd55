"""ffvj"""
