"""The coordinator: credentials, presence and introductions, as sans-IO parts;
the trio server lives in p2pd.io."""
