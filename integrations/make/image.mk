
# Image {{name}} ({{dockerfile}}, context {{context}})
.PHONY: image-{{name}} push-{{name}} run-{{name}}
image-{{name}}: $(KEEL_DIR)/{{name}}.iid
# Its context files (after .dockerignore), refreshed on every make run; the file is
# rewritten only when the list changes, so adding or removing a file rebuilds too.
ifneq ($(KEEL_FOUND),)
KEEL_REFRESH_{{name}} := $(shell $(KEEL) context-files {{name}} --make-deps $(KEEL_DIR)/{{name}}.iid --update $(KEEL_DIR)/{{name}}.d)
endif
-include $(KEEL_DIR)/{{name}}.d
$(KEEL_DIR)/{{name}}.iid: {{project_file}} $(KEEL_MK) $(wildcard $(KEEL_DIR)/{{name}}.d){{dep_iids}} | $(KEEL_DIR)
	$(KEEL) {{build_args}} --iidfile $@.tmp
	mv $@.tmp $@
push-{{name}}: image-{{name}}
{{push}}
run-{{name}}: image-{{name}}
	$(KEEL) run --rm $(KEEL_RUN_FLAGS) {{name}}
