# The two commands: `make run` and `make test`. Both create .venv on first use.
PY ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRA ?= cpu,dev,voices
DAGSTER_HOME_DIR := $(CURDIR)/results/dagster_home
# Real Speech Commands clips for the real-speech benchmarks (evaluation only; never trained on).
REALDATA ?= ../shared/realdata
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run test lint venv clean lock ui mlflow-ui bench bench-archs demo

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kws needs Python 3.11, got " + sys.version.split()[0]'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRA)]"
	@touch $(STAMP)

# The whole pipeline through Dagster (every asset in-process; `kws run-all` is the CLI twin).
run: $(STAMP)
	$(BIN)/python -m pipelines.run --dagster_home $(DAGSTER_HOME_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Dagster UI on http://127.0.0.1:3000 (assets of pipelines/definitions.py).
# The same instance `make run` records into, so its runs and materializations are listed.
ui: $(STAMP)
	$(BIN)/python -c 'from pathlib import Path; from pipelines.run import instance_for; instance_for(Path("$(DAGSTER_HOME_DIR)"))'
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Hear the export live: http://127.0.0.1:8000 (microphone or a dropped WAV). GRAPH=path/to/model
# (a saved_model folder or .tflite) picks another export; PORT=8001 another port.
demo: $(STAMP)
	$(BIN)/kws demo $(if $(GRAPH),--graph $(GRAPH)) --port $(or $(PORT),8000)

# MLflow UI on http://127.0.0.1:5000 for the runs `kws train` tracks.
mlflow-ui: $(STAMP)
	@$(BIN)/python -c 'from kws_core.training.tracking import print_runs_url; print_runs_url()'
	$(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow.db --default-artifact-root results/mlartifacts -h 127.0.0.1 -p 5000

# Benchmarks (not tests, ~50 min): each prints one summary line and appends to
# bench/results/<name>.json; bench/report.py then rewrites the generated part of BENCHMARKS.md.
# pipeline_rates, profile_ops and train_speed use the data of `make run` (made first if missing).
bench: $(STAMP)
	@test -f results/manifest/manifest.parquet || $(MAKE) run
	@test -d results/features || $(BIN)/kws features --no-progress
	$(BIN)/python bench/whole_run.py
	$(BIN)/python bench/pipeline_rates.py --repeats 5
	$(BIN)/python bench/profile_ops.py --batches 30
	$(BIN)/python bench/train_speed.py --repeats 3
	$(BIN)/python bench/export_latency.py --archs low_latency_conv --runs 300 --stream_s 120
	$(BIN)/python bench/stream_session.py --stream_s 90
	@# an export made before export.streaming was on by default has no streaming model
	@test -f results/frozen/model/model_streaming.tflite || $(BIN)/kws freeze --no-progress
	$(BIN)/python bench/streaming_tflite.py --export results/frozen/model --seconds 30
	$(BIN)/python bench/demo_streams.py --graph results/frozen/model/model_streaming.tflite \
	  --clients 1,8,16,32,48 --seconds 10 --clip_stride_ms 80
	$(BIN)/python bench/scaling.py --scales 1,3,10
	$(BIN)/python bench/soak.py --hours 2
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRA),bench]"
	$(BIN)/python bench/heldout_voices.py --out results/bench_real/heldout_piper
	@if [ -d $(REALDATA)/speech_commands_test_v0.02_dev ]; then \
	  $(BIN)/python bench/real_split.py $(REALDATA)/speech_commands_test_v0.02_dev && \
	  $(BIN)/python bench/real_speech.py --seeds 0,1 --real_dir $(REALDATA)/speech_commands_test_v0.02_dev \
	    --real_dir results/bench_real/real_heldout_speakers --real_dir results/bench_real/heldout_piper \
	    --variants mfcc_llc,emb80_mlp,emb80_conv,emb80_mlp_c16,emb80_mlp_unk50,finetune5_spk1000,issue14_default,finetune5,finetune9,voice0_spk1000,voice50,default_espeak,mfcc_llc_default,multi_real,chain_snr,chain_no_reverb,chain_no_mic,chain_no_speed,chain_no_gain,chain_no_distortion && \
	  $(BIN)/python bench/real_stream.py --words_dir $(REALDATA)/speech_commands_test_v0.02_dev \
	    --noise_dir $(REALDATA)/_background_noise_ && \
	  $(BIN)/python bench/real_exports.py --real_dir $(REALDATA)/speech_commands_test_v0.02_dev && \
	  if [ -x /usr/bin/chromium ]; then $(BIN)/python bench/demo_browser.py \
	    --real_dir $(REALDATA)/speech_commands_test_v0.02_dev \
	    --noise_dir $(REALDATA)/_background_noise_ --seconds 180; \
	  else echo "bench: /usr/bin/chromium is absent; demo_browser skipped"; fi; \
	else echo "bench: $(REALDATA) is absent; real-speech benchmarks skipped"; fi
	$(BIN)/python bench/report.py

# Every architecture's accuracy and speed at a fixed step budget (slow: conv alone ~15 min).
bench-archs: $(STAMP)
	@test -f results/manifest/manifest.parquet || $(MAKE) run
	$(BIN)/python bench/train_archs.py --steps 400

lint: $(STAMP)
	$(BIN)/ruff check kws_core pipelines tests
	$(BIN)/ruff format --check kws_core pipelines tests

# Re-resolve and write constraints.txt (after changing pins in pyproject.toml).
lock:
	$(PY) -m venv /tmp/kws-lock-venv && /tmp/kws-lock-venv/bin/pip install -q --upgrade pip
	/tmp/kws-lock-venv/bin/pip install -q --dry-run --ignore-installed --report /tmp/kws-lock.json -e ".[cpu,dev,voices]"
	$(PY) tools/write_constraints.py /tmp/kws-lock.json constraints.txt

clean:
	rm -rf $(VENV) data/ results/ mlruns/ mlflow.db
