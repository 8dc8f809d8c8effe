"""Export: the writer (`kws freeze`), the loader of exports, labelling WAV files."""
