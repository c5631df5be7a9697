from msta.data.bench import benchmark_data


def test_benchmark_returns_numbers():
    r = benchmark_data(clips=2, num_videos=1, video_frames=16, resolutions=((48, 64),), image_size=32, num_frames=4)
    for backend in ("decord", "pyav"):
        for mode in ("resize", "noresize"):
            assert r[f"64x48_{backend}_{mode}_clips_per_s"] > 0
        assert r[f"64x48_decode_resize_speedup_{backend}"] > 0
