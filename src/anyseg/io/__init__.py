"""Reading images and writing results (atomically)."""
