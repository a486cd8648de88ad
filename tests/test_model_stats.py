from models import build_model
from models.stats import feature_maps, macs_per_image, receptive_field


def test_receptive_fields():
    # By hand: every 3x3 conv adds 2 * jump; stride-2 convs double the jump.
    assert receptive_field(build_model("singlestage", 100)) == 3 + 12 * 2  # 27 px, less than the image
    assert receptive_field(build_model("multistage", 100)) == 53
    assert receptive_field(build_model("multistage", 100, blocks_per_stage=3)) == 81


def test_macs_per_image_match_a_hand_count():
    def conv(c_in, c_out, size, k=3):
        return c_in * c_out * k * k * size * size

    single = conv(3, 32, 32) + 12 * conv(32, 32, 32) + 32 * 100
    multi = (conv(3, 16, 32) + 4 * conv(16, 16, 32)
             + conv(16, 32, 16) + conv(16, 32, 16, k=1) + 3 * conv(32, 32, 16)
             + conv(32, 64, 8) + conv(32, 64, 8, k=1) + 3 * conv(64, 64, 8) + 64 * 100)
    assert macs_per_image(build_model("singlestage", 100)) == single
    assert macs_per_image(build_model("multistage", 100)) == multi


def test_feature_maps_follow_each_stage_and_resolution():
    assert feature_maps(build_model("singlestage", 100)) == [(32, 32)]
    assert feature_maps(build_model("singlestage-dilated", 100)) == [(32, 32)]  # dilation keeps full resolution
    assert feature_maps(build_model("multistage", 100)) == [(16, 32), (32, 16), (64, 8)]
    assert feature_maps(build_model("multistage-constwidth", 100)) == [(32, 32), (32, 16), (32, 8)]
    assert feature_maps(build_model("multistage-narrow", 100)) == [(8, 32), (16, 16), (32, 8)]
    for arch in ("multistage-constwidth", "multistage-narrow", "singlestage-dilated"):
        assert receptive_field(build_model(arch, 100)) >= 32  # each variant sees the whole image
