"""The layout of a compress run directory (see docs/architecture.md for what each holds)."""

RECIPE_FILE = "compress.yaml"  # the recipe the run was made with
SPACE_FILE = "space.json"  # the search space, for meta-training on the history later
STAGES_FILE = "stages.json"  # the stage log: fingerprints, done flags, seconds, summaries
TEACHER_DIR = "teacher"  # the tiny teacher, when the recipe asks for one
LATENCY_DIR = "latency"  # stage 1: the latency model
PREDICTOR_FILE = "predictor.json"  # ... a fitted LatencyPredictor
MEASURED_FILE = "measured.json"  # ... or per-arch measurements
TRAIN_DIR = "train"  # stage 2: checkpoint, trained supernet, tokenizer, metrics
SEARCH_DIR = "search"  # stage 3: search state, search.json, plots
MODEL_DIR = "model"  # stage 4: the exported student
BASELINE_DIR = "baseline"  # stage 4: the exported uniform-shrink baseline
LAYER_DROP_DIR = "layer_drop"  # stage 4: the exported layer-drop baseline (every other layer, DistilBERT-style)
