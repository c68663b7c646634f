"""Tables as Parquet under the storage root: no pickles, atomic writes, readable by any tool.

``data/assets/<asset>/<album>/table.parquet`` for album-partitioned assets and
``data/assets/<asset>/table.parquet`` for assets over all albums. Loading several partitions of
an upstream asset (AllPartitionMapping) gives ``{album: DataFrame}``, like Dagster's UPath IO
managers do.
"""

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa

from identity_pipeline.storage import (
    DataLayout,
    atomic_write_table,
    read_table,
    remove_stale_temporaries,
)


class TableIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames as Parquet tables in the pipeline's storage layout."""

    data_dir: str | None = None

    @property
    def layout(self) -> DataLayout:
        return DataLayout.from_env(self.data_dir)

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        return self.layout.table_path("/".join(asset_key.path), partition)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | pa.Table | None) -> None:
        """DataFrames are converted; an Arrow table is written as is (for exact list types)."""
        if obj is None:
            return
        if isinstance(obj, pd.DataFrame):
            table = pa.Table.from_pandas(obj, preserve_index=False)
        elif isinstance(obj, pa.Table):
            table = obj
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "the table IO manager stores pandas DataFrames and Arrow tables only"
            )
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, partition)
        atomic_write_table(path, table)
        remove_stale_temporaries(path)  # left by runs killed while writing this table
        context.add_output_metadata(
            {"table_path": dg.MetadataValue.path(str(path)), "dagster/row_count": table.num_rows}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict[str, pd.DataFrame]:
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return self._read(asset_key, None)
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and not _wants_mapping(context):
            return self._read(asset_key, keys[0])
        tables: dict[str, pd.DataFrame] = {}
        for key in keys:
            path = self._path(asset_key, key)
            if path.exists():
                tables[key] = self._read(asset_key, key)
            else:
                context.log.warning(
                    f"{asset_key.to_user_string()}[{key}] has no table yet at {path}; "
                    "it is left out until it is materialized"
                )
        return tables

    def _read(self, asset_key: dg.AssetKey, partition: str | None) -> pd.DataFrame:
        path = self._path(asset_key, partition)
        if not path.exists():
            where = f"[{partition}]" if partition else ""
            raise FileNotFoundError(
                f"{asset_key.to_user_string()}{where} has not been materialized: {path} is missing"
            )
        return read_table(path).to_pandas()


def _wants_mapping(context: dg.InputContext) -> bool:
    """A non-partitioned consumer of a partitioned asset always gets ``{partition: table}``."""
    return not context.has_partition_key
