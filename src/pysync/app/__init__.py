"""What an app embeds: the write path (``pysync.Writer``) beside the read path."""
