"""The AST model on MindSpore (native Cells, MindNLP reference) and the process settings it needs; no Apache Beam."""
