"""pytest plugin (entry point `qlora_bench`): VRAM budget assertions for users' own tests."""
