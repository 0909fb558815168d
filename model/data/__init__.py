"""Data: video and audio decoding, ingest into DATA_DIR, its layout and readers, frames, shards, units pools."""
