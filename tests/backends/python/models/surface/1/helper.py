NAME = "helper module"
