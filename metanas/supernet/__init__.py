"""The weight-sharing supernet: elastic ops, `ElasticBert`, teacher loading, rewiring and export.

- `ops`: prefix-sliced Linear, LayerNorm and Embedding;
- `model`: `ElasticBert` (and `from_teacher`, which copies a teacher's weights in);
- `convert`: loading and checking HF teachers; `families`: facts about them;
- `rewire`: importance ordering of heads and FFN neurons;
- `export`: a subnet as a standalone HF model directory; `remote/`: the code such a
  directory carries when no vanilla class can express the arch.
"""
