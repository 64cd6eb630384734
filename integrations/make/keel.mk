{{header}}#
# In your Makefile (next to {{project_file}}):
#     include keel.mk
# Targets: images, image-NAME, push-NAME, run-NAME (NAME: {{image_names}}).
# Run a recipe line inside a build environment of {{project_file}}:
#     test: ; $(KEEL_IN) make check          # the default env ({{default_env}})
#     lint: ; $(KEEL_IN_<env>) ./lint.sh     # a named env
# Images rebuild only when their Dockerfile or a context file (after .dockerignore)
# changes, or such a file is added or removed: $(KEEL_DIR)/NAME.d lists them. It is
# refreshed by `keel context-files` each time make reads this file, so set KEEL before
# the include (or on the command line).

# Including this file leaves the includer's default goal alone (its first target, or
# .DEFAULT_GOAL): the goal is saved here and restored at the end.
KEEL_SAVED_DEFAULT_GOAL := $(.DEFAULT_GOAL)

KEEL ?= {{keel}}
KEEL_DIR ?= .keel
# Whether keel can run here: not inside a build environment (`$(KEEL_IN) make` reads
# this file again where there is no keel), so the context lists are refreshed only
# where it can.
KEEL_FOUND := $(shell command -v $(firstword $(KEEL)) 2>/dev/null)
# Extra flags for `keel run` in run-NAME (e.g. KEEL_RUN_FLAGS = -p 8080:80).
KEEL_RUN_FLAGS ?=
# This file: regenerating it rebuilds the images.
KEEL_MK := $(lastword $(MAKEFILE_LIST))

.PHONY: images
images:{{image_targets}}

$(KEEL_DIR):
	mkdir -p $@
{{envs}}{{images}}

.DEFAULT_GOAL := $(KEEL_SAVED_DEFAULT_GOAL)
