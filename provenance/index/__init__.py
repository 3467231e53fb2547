"""On-disk index directory: manifest, FAISS vectors and SQLite metadata."""
