"""Our CLIP against open_clip's: the same state-dict layout, and the same outputs on the same weights."""

import pytest
import torch

import encoders
from open_clip_compat import import_open_clip, open_clip_config, open_clip_model

TINY = ["tiny-RN", "tiny-ViT"]
PAPER_SIZES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]


def randomize(model, seed=0):
    """Every parameter and BatchNorm statistic random, so no term of the computation hides behind a zero or one
    of the initialisation (the last BN of each ResNet block starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tensor.shape, generator=generator) * 0.05
            if name.endswith("running_var"):
                values = values.abs() + 0.5
            elif name == "logit_scale":
                values = torch.tensor(2.0)
            tensor.copy_(values)
    return model


def inputs(model, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    size = model.visual.input_resolution
    images = torch.randn(batch, 3, size, size, generator=generator)
    tokens = encoders.tokenize(["a photo of a dog", "", "x " * 100][:batch])
    return images, tokens


def outputs(model, images, tokens):
    """Image features, text features and the image-to-text logits, unnormalised features included."""
    with torch.no_grad():
        image_features, text_features, scale = model(images, tokens)
        return {
            "image": model.encode_image(images),
            "text": model.encode_text(tokens),
            "logits": scale * image_features @ text_features.T,
        }


@pytest.fixture(scope="module", params=TINY)
def pair(request):
    """(ours, open_clip's) with the same random weights, copied from ours into open_clip's strictly."""
    ours = randomize(encoders.create(request.param)).eval()
    theirs = open_clip_model(request.param)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def test_outputs_equal_open_clip_fp32(pair):
    ours, theirs = pair
    images, tokens = inputs(ours)
    expected, got = outputs(theirs, images, tokens), outputs(ours, images, tokens)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)


def test_short_texts_equal_open_clip(pair):
    # A batch of short texts: our text tower cuts the padding after the last end token; open_clip runs all 77.
    ours, theirs = pair
    tokens = encoders.tokenize(["a dog", "a photo of a cat on a mat", ""])
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_text(tokens), theirs.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_open_clip_state_dict_loads_strictly_and_gives_its_outputs(pair):
    _, theirs = pair
    name = "tiny-RN" if hasattr(theirs.visual, "attnpool") else "tiny-ViT"
    ours = encoders.create(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images, tokens = inputs(ours, seed=2)
    expected, got = outputs(theirs, images, tokens), outputs(ours, images, tokens)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)


def test_gradients_equal_open_clip(pair):
    # Training uses the same graph: the gradients of a contrastive-style loss match too (train mode: BN batch stats).
    ours, theirs = pair
    images, tokens = inputs(ours)
    grads = []
    for model in (ours, theirs):
        model.train().zero_grad()
        image_features, text_features, scale = model(images, tokens)
        (scale * image_features @ text_features.T).logsumexp(dim=1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.eval()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[1]:
        # A BN bias's gradient sums a whole batch of activations in float32, in an order the CPU's kernels choose:
        # 1.5e-5 apart on gradients of 2.3 (6e-6 of the tensor's scale) on some machines. The tolerance follows
        # the tensor's scale; a wrong graph is off by the order of the gradient itself.
        scale = grads[1][name].abs().max().item()
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5 * (1 + scale), msg=name)


def test_bf16_autocast_close_to_open_clip_and_fp32(pair):
    ours, theirs = pair
    images, tokens = inputs(ours)
    reference = outputs(ours, images, tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = outputs(ours, images, tokens), outputs(theirs, images, tokens)
    for key in expected:
        assert torch.isfinite(got[key]).all()
        torch.testing.assert_close(got[key].float(), expected[key].float(), rtol=0.05, atol=0.05, msg=key)
        torch.testing.assert_close(got[key].float(), reference[key], rtol=0.1, atol=0.1, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_equal_open_clip(pair, dtype):
    ours, theirs = (m.to("cuda") for m in pair)
    try:
        images, tokens = (t.to("cuda") for t in inputs(ours))
        with torch.autocast("cuda", dtype=dtype):
            got, expected = outputs(ours, images, tokens), outputs(theirs, images, tokens)
        for key in expected:
            assert torch.isfinite(got[key]).all()
            torch.testing.assert_close(got[key].float(), expected[key].float(), rtol=0.05, atol=0.05, msg=key)
    finally:
        for model in pair:
            model.to("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_equal_open_clip(pair):
    ours, theirs = (m.to("cuda") for m in pair)
    try:
        images, tokens = (t.to("cuda") for t in inputs(ours))
        # TF32 would round both sides' matmuls to 10-bit mantissas, differently.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        got, expected = outputs(ours, images, tokens), outputs(theirs, images, tokens)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4, msg=key)
    finally:
        for model in pair:
            model.to("cpu")


def test_half_weights_run():
    # OpenAI ships fp16 weights; LayerNorm computes in fp32 and the towers cast their inputs to the weights' dtype.
    model = randomize(encoders.create("tiny-ViT")).eval()
    images, tokens = inputs(model)
    reference = outputs(model, images, tokens)
    got = outputs(model.to(torch.bfloat16), images, tokens)
    for key in reference:
        torch.testing.assert_close(got[key].float(), reference[key], rtol=0.1, atol=0.1, msg=key)


@pytest.mark.parametrize("name", PAPER_SIZES)
def test_paper_sizes_match_open_clip_layout(name):
    # Built on the meta device: the layout (names and shapes) of every paper size without allocating weights.
    open_clip = import_open_clip()
    with torch.device("meta"):
        ours = encoders.create(name)
        theirs = open_clip_model(name, device="meta")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    # And our config file is open_clip's OpenAI config for that size, number for number.
    stem = name.replace("/", "-").replace("@336px", "-336")
    assert open_clip_config(encoders.model_config(name)) == open_clip.get_model_config(stem + "-quickgelu")


def test_forward_contract():
    model = encoders.create("tiny-RN").eval()
    assert model.visual.input_resolution == 64 and model.context_length == 77 and model.vocab_size == 49408
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) > 100: the forward clamps the scale
        image_features, text_features, scale = model(*inputs(model))
    assert scale.item() == pytest.approx(100.0)
    assert image_features.shape == text_features.shape == (3, 128)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(3))
    assert encoders.create("tiny-RN").logit_scale.exp().item() == pytest.approx(1 / 0.07)
