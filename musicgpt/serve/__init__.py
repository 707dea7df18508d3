"""`musicgpt serve`: a local web app that continues a piece and plays the samples.

form.py (the fields and their bounds), jobs.py (the single model thread), app.py (the Starlette
routes), assets/ (the one page, its script and style; the synth is viz/assets/player.js).
"""
