//! Reading the dev IdP's sign-in page like a browser: shared by `bench_signin` and `soak`.

/// The dev IdP page's `<form>` holding the button `name="user" value="{user}"`: its action and
/// hidden fields.
pub fn find_form(html: &str, user: &str) -> Option<(String, Vec<(String, String)>)> {
    let needle = format!("name=\"user\" value=\"{user}\"");
    let chunk = html.split("<form").skip(1).map(|c| c.split("</form>").next().unwrap_or("")).find(|c| c.contains(&needle))?;
    let fields = chunk
        .split("<input")
        .skip(1)
        .map(|input| input.split('>').next().unwrap_or(""))
        .filter(|tag| attr(tag, "type").as_deref() == Some("hidden"))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect();
    Some((attr(chunk, "action").unwrap_or_default(), fields))
}

/// The value of attribute `name` in `tag`, HTML entities decoded.
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
}
