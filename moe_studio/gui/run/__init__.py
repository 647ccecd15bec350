"""Running work outside the GUI thread: the engine process (training, inspection,
probes), the live state of the app's own run, and the timer that follows a store."""
