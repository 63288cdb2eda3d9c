"""`frost experiment`: arms x seeds from one file, resumable by several workers (`runner`), its grid, choices and
test phase (`choices`), the diagnostics at the final checkpoints (`final`) and its figure (`plots`)."""
