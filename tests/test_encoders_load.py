"""encoders.load reads every checkpoint format users have: OpenAI's TorchScript archives (fp16 weights plus
three attribute entries), plain OpenAI-layout state dicts, and open_clip training checkpoints (DDP prefixes)."""

import copy

import pytest
import torch

import encoders
from openwit.errors import InputError
from test_encoders_model import inputs, outputs, randomize


@pytest.fixture(scope="module")
def model():
    return randomize(encoders.create("tiny-ViT"), seed=3).eval()


def assert_same_outputs(loaded, model, tol=1e-6):
    assert not loaded.training
    expected, got = outputs(model, *inputs(model)), outputs(loaded, *inputs(model))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=tol, atol=tol, msg=key)


def test_random_init_by_paper_name():
    model = encoders.load("tiny-RN")
    assert not model.training and model.visual.input_resolution == 64
    assert set(encoders.available_models()) >= {"RN50", "ViT-B/32", "ViT-L/14@336px", "tiny-RN", "tiny-ViT"}
    assert encoders.model_config("ViT-B-32") == encoders.model_config("ViT-B/32")


def test_plain_state_dict(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    assert_same_outputs(encoders.load("tiny-ViT", path), model)


def test_open_clip_checkpoint_with_module_prefix(model, tmp_path):
    path = tmp_path / "epoch_1.pt"
    state_dict = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": state_dict, "optimizer": {}}, path)
    assert_same_outputs(encoders.load("tiny-ViT", path), model)


def openai_archive(model, path):
    """A TorchScript archive laid out as OpenAI ships theirs: a traced model whose state dict holds the weights
    in fp16 under OpenAI's names, plus input_resolution, context_length and vocab_size as tensors."""
    model = copy.deepcopy(model)
    for name, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    traced = torch.jit.trace(model, inputs(model, batch=1), check_trace=False)
    torch.jit.save(traced.half(), str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, which OpenAI's archives need
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the trace only has to hold the weights
def test_torchscript_archive_fp16(model, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    openai_archive(model, path)
    keys = set(torch.jit.load(str(path)).state_dict())
    assert {"input_resolution", "context_length", "vocab_size", "visual.proj", "token_embedding.weight"} <= keys
    # fp16 weights load into the fp32 model: outputs equal up to the fp16 rounding of the weights.
    assert_same_outputs(encoders.load("tiny-ViT", path), model, tol=2e-3)


def test_trained_from_scratch_vocabulary(tmp_path):
    # A model trained with its own tokenizer has a smaller token embedding: load reads the size off the weights.
    model = randomize(encoders.create("tiny-RN", vocab_size=600), seed=4).eval()
    path = tmp_path / "small-vocab.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = encoders.load("tiny-RN", path)
    assert loaded.vocab_size == 600
    tokens = torch.randint(0, 599, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))


def test_our_weights_load_in_open_clip_file_roundtrip(model, tmp_path):
    # A model saved by us loads in open_clip from the file, strictly (as `open_clip.create_model` + load_state_dict).
    from open_clip_compat import open_clip_model

    path = tmp_path / "ours.pt"
    torch.save(model.state_dict(), path)
    theirs = open_clip_model("tiny-ViT")
    theirs.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert_same_outputs(theirs, model, tol=1e-5)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such checkpoint"),
        (b"not a checkpoint", "not a TorchScript archive"),
        ({"state_dict": {"visual.conv1.weight": torch.zeros(1)}}, "not a CLIP state dict"),
    ],
)
def test_bad_checkpoints_are_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(InputError, match=message):
        encoders.load("tiny-ViT", path)


def test_weights_of_another_size_are_an_input_error(tmp_path):
    path = tmp_path / "rn.pt"
    torch.save(encoders.create("tiny-RN").state_dict(), path)
    with pytest.raises(InputError, match="do not fit tiny-ViT"):
        encoders.load("tiny-ViT", path)


def test_unknown_names_are_input_errors():
    with pytest.raises(InputError, match="unknown model 'ViT-Z/7'.*RN50"):
        encoders.load("ViT-Z/7")
    with pytest.raises(InputError, match="unknown model config keys"):
        encoders.create("tiny-RN", vocab=10)
