"""Training CLIP on OpenWIT shards: loader (data), loss, schedule, checkpoints and the `openwit train` loop."""
