
# Image {{name}} ({{dockerfile}}, context {{context}})
.PHONY: image-{{name}} push-{{name}} run-{{name}}
image-{{name}}: $(KEEL_DIR)/{{name}}.iid
-include $(KEEL_DIR)/{{name}}.d
$(KEEL_DIR)/{{name}}.iid: {{project_file}} $(KEEL_MK){{dep_iids}} | $(KEEL_DIR)
	$(KEEL) {{build_args}} --iidfile $@.tmp
	$(KEEL) context-files {{name}} --make-deps $@ > $(KEEL_DIR)/{{name}}.d.tmp
	mv $(KEEL_DIR)/{{name}}.d.tmp $(KEEL_DIR)/{{name}}.d
	mv $@.tmp $@
push-{{name}}: image-{{name}}
{{push}}
run-{{name}}: image-{{name}}
	$(KEEL) run --rm $(KEEL_RUN_FLAGS) {{name}}
