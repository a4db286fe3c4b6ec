"""Adapters from memedit to other frameworks; each lives in its own module and is imported only when used.

>>> from memedit.integrations.langchain import MemoryChatModel, EditRetriever   # doctest: +SKIP
"""
