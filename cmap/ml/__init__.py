"""Models: embeddings, encoders, decoders, losses and the Lightning tasks that train them."""

import logging


class _NoInstallAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing [litmodels] / [litlogger] ..." lines (cloud uploads and
    experiment tracking on Lightning's platform: nothing a cmap user acts on), which it prints at every
    run; every other message, tips included, passes. Lightning (2.6) has no switch for them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡 Tip:") and ("[litmodels]" in message or "[litlogger]" in message))


# Here, not in the cmap command: every cmap task (cmap fit, cmap map, python -m cmap.mapping, a Trainer of
# cmap's tasks in Python) imports this package. Lightning logs the tips through this logger
# (rank_zero_info); the filter belongs to the logger, so importing Lightning later changes nothing.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoInstallAdvertisements())
