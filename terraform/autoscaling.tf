# Target tracking: the service grows when its tasks are busy (CPU) or when each task gets
# many requests (a class start), and shrinks slowly afterwards. Every instance shares the
# table, so any count is correct; min_count keeps one per AZ through a task failure.
resource "aws_appautoscaling_target" "broker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.broker.name}/${aws_ecs_service.broker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.broker.service_namespace
  resource_id        = aws_appautoscaling_target.broker.resource_id
  scalable_dimension = aws_appautoscaling_target.broker.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value = var.cpu_target_percent
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${var.name}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.broker.service_namespace
  resource_id        = aws_appautoscaling_target.broker.resource_id
  scalable_dimension = aws_appautoscaling_target.broker.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value = var.requests_per_task_per_minute
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.broker.arn_suffix}/${aws_lb_target_group.broker.arn_suffix}"
    }
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
  }
}
