"""One album folder = one dynamic partition, added by the album sensor."""

import dagster as dg

ALBUMS_PARTITION_NAME = "albums"

albums_partitions = dg.DynamicPartitionsDefinition(name=ALBUMS_PARTITION_NAME)
