"""The symbolic view of a document (torch-free): entity/relation symbol layout, negative sampling, linearisation into row-column ordered targets, and parsing generated codes back."""
