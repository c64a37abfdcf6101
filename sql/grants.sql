-- Runs last, after every function exists.

-- reading model files from the server's disk is for superusers and those they grant it to
REVOKE ALL ON FUNCTION clip.register_model(text, text) FROM PUBLIC;
