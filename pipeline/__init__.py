"""The WIT construction pipeline: Apache Beam stages from candidate pairs to WebDataset + Parquet shards."""
