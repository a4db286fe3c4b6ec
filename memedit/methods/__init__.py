"""Ways of answering with an edit in view (IKE, SERAC; MeLLo later) and, later, of writing edits into weights.

Nothing is imported here eagerly: each method is its own module, loaded when used.
"""
