"""Training data: documents to text chunks, JSONL readers, chat-format encoding, packing, synthetic Q&A."""
