//! The htmlfile transport: `GET …/htmlfile?c=<callback>`, an HTML document loaded in a
//! hidden iframe that stays open; each frame is a `<script>` calling the parent page's
//! callback. For browsers without XHR streaming or EventSource.

use super::HttpReceiver;
use crate::frame;

pub(crate) struct HtmlFile {
    /// The parent page's callback object, already checked to be a safe name.
    pub(crate) callback: String,
}

/// Browsers start running a streamed document's scripts only after about 1 KiB.
const MIN_PRELUDE: usize = 1024;

impl HttpReceiver for HtmlFile {
    const STREAMING: bool = true;
    const CORS: bool = false;

    fn content_type(&self) -> &'static str {
        "text/html; charset=UTF-8"
    }

    fn prelude(&self) -> Option<String> {
        let mut p = format!(
            r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{};
    c.start();
    function p(d) {{c.message(d);}};
    window.onload = function() {{c.stop();}};
  </script>"#,
            self.callback
        );
        let pad = (MIN_PRELUDE + 1).saturating_sub(p.len());
        p.push_str(&" ".repeat(pad));
        p.push_str("\r\n\r\n");
        Some(p)
    }

    fn wrap(&self, frame: &str, out: &mut String) {
        out.push_str("<script>\np(");
        frame::push_script_string(out, frame);
        out.push_str(");\n</script>\r\n");
    }
}
