import mxnet as mx
import numpy as np
import pytest

from finetune import GradCAM, Preprocess
from finetune.errors import ConfigError, UnknownNameError

from .conftest import make_tiny


def _manual_cam(net, image):
    """Grad-CAM of the last ReLU of TinyNet, written out by hand with autograd."""
    x = mx.nd.array(net.preprocess.transform(image, "RGB")[None])
    a = mx.nd.relu(net.conv2(mx.nd.relu(net.conv1(x))))
    a.attach_grad()
    with mx.autograd.record(train_mode=False):
        logits = net.fc(mx.nd.flatten(net.pool(a)))
        c = int(logits.argmax(axis=1).asscalar())
        score = logits[0, c]
    score.backward()
    w = a.grad.asnumpy()[0].mean(axis=(1, 2))
    return np.maximum((w[:, None, None] * a.asnumpy()[0]).sum(0), 0), c


@pytest.mark.parametrize("hybridize", [False, True])
def test_gradcam_equals_hand_written_autograd(hybridize):
    net = make_tiny()
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    if hybridize:
        net.hybridize()
        net(mx.nd.zeros((1, 3, 16, 16)))
    cam = GradCAM(net)
    assert cam.layer == "tiny_relu1"  # the last 4-D layer
    result = cam(image, color="RGB")
    expected, c = _manual_cam(net, image)
    assert result.class_index == c and result.class_name == net.class_names[c]
    np.testing.assert_allclose(result.cam, expected, rtol=1e-4, atol=1e-6)
    assert result.heatmap.shape == (16, 16) and 0 <= result.heatmap.min() and result.heatmap.max() <= 1


def test_chosen_layer_and_class_by_name_and_index():
    net = make_tiny()
    image = np.full((20, 20, 3), 100, np.uint8)
    cam = GradCAM(net, layer="tiny_conv0_fwd")
    assert cam.layer == "tiny_conv0_fwd"
    r1 = cam(image, target="fish", color="RGB")
    r2 = cam(image, target=2, color="RGB")
    assert r1.class_index == r2.class_index == 2
    np.testing.assert_allclose(r1.cam, r2.cam)
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny_conv0_fwd'"):
        GradCAM(net, layer="tiny_conv0_fw")
    with pytest.raises(ConfigError, match="target"):
        cam(image, target=7, color="RGB")
    with pytest.raises(ConfigError, match="4-D"):
        GradCAM(net, layer="tiny_dense0_fwd")


def test_heatmap_maps_back_through_the_centre_crop():
    net = make_tiny()
    net.preprocess = Preprocess(size=(16, 16), resize=16, mean=(127,) * 3, std=(64,) * 3)
    wide = np.random.default_rng(1).integers(0, 255, (32, 64, 3)).astype(np.uint8)
    result = GradCAM(net, layer="tiny_conv0_fwd")(wide, color="RGB")
    assert result.heatmap.shape == (32, 64)
    # resized to 16x32, cropped at columns 8..24 -> original columns 16..48 only
    assert result.heatmap[:, :14].max() == 0 and result.heatmap[:, 50:].max() == 0
    assert result.mass_inside((0, 14, 32, 50)) == pytest.approx(1.0)
    overlay = result.overlay()
    assert overlay.shape == (32, 64, 3) and overlay.dtype == np.uint8


def test_result_saves_png(tmp_path):
    net = make_tiny()
    r = GradCAM(net)(np.zeros((16, 16, 3), np.uint8), color="BGR")
    r.save(tmp_path / "cam.png")
    assert (tmp_path / "cam.png").stat().st_size > 100
    assert repr(r).startswith("GradCAMResult(")


def test_one_image_from_any_form_and_a_folder_is_refused(tiny_model, image_folder):
    path = sorted(image_folder.rglob("*.png"))[0]
    cam = GradCAM(tiny_model)
    from_file = cam(path)
    np.testing.assert_allclose(cam(path.read_bytes()).heatmap, from_file.heatmap, atol=1e-6)
    np.testing.assert_allclose(cam(from_file.image[:, :, ::-1], color="BGR").heatmap, from_file.heatmap, atol=1e-6)
    with pytest.raises(ConfigError, match="one image per call. Got 24 images"):
        cam(image_folder)
    with pytest.raises(ConfigError, match="color="):
        cam(from_file.image)
