"""Raw CSV files as serialized tf.Examples, block by block, typed by the raw data contract.

CsvExampleGen infers each column's type with a CombineGlobally over every parsed line,
used as a side input; a runner that cannot stream into a side input (the DirectRunner)
holds every parsed line in memory until it is known. The pipeline's schema (the
contract, `schemas/schema.pbtxt` unless the `schema_file` option says otherwise)
already gives the types, and RawDataCheck has checked the files against it, so the
encoder takes them from there and streams: pyarrow reads a file in `BLOCK_BYTES`
blocks and tfx-bsl's C++ encoder turns each block into records.

As in CsvExampleGen, an empty cell is an empty value list.
"""

import os
from typing import Dict, Iterator, Tuple

import numpy as np

BLOCK_BYTES = 1 << 24


def schema_types(schema_file: str) -> Dict:
    """{column: pyarrow type} of the schema (a TensorFlow Metadata schema.pbtxt) at `schema_file`."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    schema = io_utils.parse_pbtxt_file(schema_file, schema_pb2.Schema())
    arrow = {schema_pb2.INT: pa.int64(), schema_pb2.FLOAT: pa.float32(), schema_pb2.BYTES: pa.binary()}
    return {f.name: arrow[f.type] for f in schema.feature}


def encode_csv(path: str, schema_file: str, day_column: str = "day") -> Iterator[Tuple[list, np.ndarray]]:
    """(serialized tf.Examples, their `day_column` values) per block of the CSV file at `path`,
    typed by the schema at `schema_file`.

    Raises ValueError naming the file if it has a column the schema lacks.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from apache_beam.io.filesystems import FileSystems
    from tfx_bsl.coders import example_coder

    types = schema_types(schema_file)  # a small file, read once per CSV file
    encoder = example_coder.RecordBatchToExamplesEncoder()
    # Beam's file systems (local, gs://, ...), as CsvExampleGen reads; pyarrow needs a file object's `closed`
    with FileSystems.open(path, compression_type="uncompressed") as f:
        reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
        unknown = [n for n in reader.schema.names if n not in types]
        if unknown:
            raise ValueError(f"{path}: columns not in {schema_file}: {unknown}")
        if day_column not in reader.schema.names:
            raise ValueError(f"{path}: no `{day_column}` column; the time split needs it")
        for batch in reader:
            lists = []
            for column in batch.columns:
                valid = ~column.is_null().to_numpy(zero_copy_only=False)
                offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int32)
                lists.append(pa.ListArray.from_arrays(pa.array(offsets), column.drop_null()))
            records = encoder.encode(pa.RecordBatch.from_arrays(lists, batch.schema.names))
            days = batch.column(day_column)
            if days.null_count:
                raise ValueError(f"{path}: a row without a `{day_column}`; the time split needs it")
            yield records, days.to_numpy(zero_copy_only=False)
