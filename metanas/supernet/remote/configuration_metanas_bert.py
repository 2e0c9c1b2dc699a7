"""Config of a BERT-like encoder whose layers may differ in heads and FFN size.

This file is copied next to exported weights and loaded with `trust_remote_code=True`;
it must not import metanas.

`config.json` names the BERT family (`model_type: bert`) and this class in `auto_map`.
Tools that read only the config, above all `AutoTokenizer.from_pretrained(dir)` (which
reads config.json on every call, before tokenizer_config.json), then treat the directory
as BERT's and load at once; a custom `model_type` would make each of them ask whether to
run this code. The model itself needs the code: `AutoModel.from_pretrained(dir,
trust_remote_code=True)`. Without it transformers builds a uniform BertModel and stops
at the first weight whose size differs.
"""

from transformers import PretrainedConfig


class MetanasBertConfig(PretrainedConfig):
    model_type = "bert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        layer_heads: list | None = None,
        layer_intermediate_sizes: list | None = None,
        attention_head_size: int = 64,
        embedding_size: int | None = None,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        position_style: str = "bert",
        add_pooling_layer: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.layer_heads = list(layer_heads or [12] * num_hidden_layers)
        self.layer_intermediate_sizes = list(layer_intermediate_sizes or [4 * hidden_size] * num_hidden_layers)
        self.attention_head_size = attention_head_size
        self.embedding_size = embedding_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.position_style = position_style
        self.add_pooling_layer = add_pooling_layer
        self.initializer_range = initializer_range
        # Hugging Face utilities expect a single head count; report the widest layer's.
        self.num_attention_heads = max(self.layer_heads)
        if len(self.layer_heads) != num_hidden_layers or len(self.layer_intermediate_sizes) != num_hidden_layers:
            raise ValueError("layer_heads and layer_intermediate_sizes need one value per layer")
