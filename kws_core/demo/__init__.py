"""`kws demo`: a local web page that hears a model live (microphone or a dropped WAV).

`server.py` holds the ASGI app (starlette), the per-connection session and the `LiveScorer`
adapter; `static/` holds the page and its hand-written JS, served by the package itself.
"""
