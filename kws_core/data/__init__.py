"""Getting data: download / extract / synthesise, the manifest and its partitions, validation."""
