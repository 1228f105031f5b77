"""Host-side long-term memory: episodic store (SQLite), hippocampal index, working memory."""
