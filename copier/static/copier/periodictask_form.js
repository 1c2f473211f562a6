// django_celery_beat's periodic task form: the crontab's help says what the chosen schedule
// means in words. Its own template does this in an inline script, which the copier's
// Content-Security-Policy refuses; the copier's template of the same name loads this file.
(function ($) {
  "use strict";
  var readable = JSON.parse(document.getElementById("readable-crontabs").textContent);
  var help = JSON.parse(document.getElementById("crontab-help").textContent);

  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    var translation = readable[$("#id_crontab").val()] || "";
    $(".field-crontab .help").text(help)
      .append($("<br>"), document.createTextNode("Translation: " + translation));
  });
})(django.jQuery);
