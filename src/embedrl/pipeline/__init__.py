"""The Kubeflow pipeline: the stage functions its components call (`steps`), compile / run locally /
submit (`dag`), and the distributed launch of training steps as Kubeflow Trainer TrainJobs."""
