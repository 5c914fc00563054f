"""Beam options shared by OpenWIT's pipelines.

Beam parses every PipelineOptions subclass that has been imported with one global parser, so two pipelines
that each declare `--output` collide ("conflicting option string") as soon as one process imports both (a test
session, a notebook, a launcher). Flags common to several pipelines are therefore declared once, here.
"""

from apache_beam.options.pipeline_options import PipelineOptions


class OutputOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--output", help="output folder (local, gs://, s3://, hdfs://)")
