"""What learns: each algorithm runs one training iteration at a time for the runner."""
